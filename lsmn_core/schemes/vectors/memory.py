"""What `lsmn merge` will hold at its peak, estimated before it starts, so that a user sees whether it
fits before waiting for it. The evaluation holds the checkpoint's network, every task's vector of its
targets (read once, float32), the method's parts of them and the merged deltas; writing holds one
tensor at a time: every task's vectors of a chunk of rows; or of a whole weight matrix for a merge by
singular value decompositions (the vectors, the batched SVD's copy, workspace and factors, the
parts); or, where a method needs each task's level over its whole tensor (TIES), that task's tensor
with what the level is found from. The copies counted are as measured on all-MiniLM-L6-v2 (`lsmn
bench` compares the estimate with the measured peak). The tasks' data are not counted."""

from __future__ import annotations

import math
from dataclasses import dataclass

from lsmn_core.merges.combine import CHUNK, WHOLE
from lsmn_core.merges.matrix import MatrixMerge
from lsmn_core.merges.method import MergeMethod, Recipe
from lsmn_core.schemes.vectors.inputs import TaskVectorSet

FLOAT = 4
SVD_COPIES = 7  # x 4 bytes x T x m x n at a matrix merge's peak (measured on MiniLM: 6.6 with full SVDs,
#                 5.6 by the Gram route)
LEVEL_COPIES = 3  # x 4 bytes x a tensor's size, for one task's level: its read and the checkpoint's (copies
#                   from a .bin or a float16 file; a float32 safetensors file's are its mapped pages) and
#                   the difference (measured 1.2 on MiniLM's float32 word embeddings: the magnitudes are
#                   taken a block at a time)


@dataclass
class MergeMemory:
    """Bytes at the peak of each stage, and the tensor that sets the writing's."""

    evaluation: int
    writing: int
    largest: str

    @property
    def peak(self) -> int:
        return max(self.evaluation, self.writing)

    def line(self) -> str:
        stages = (f"evaluation {self.evaluation / 1e9:.2f} GB, " if self.evaluation else "") + \
            f"writing {self.writing / 1e9:.2f} GB at {self.largest}"
        return (f"peak memory, estimated: {self.peak / 1e9:.2f} GB above the process's own and the tasks' data "
                f"({stages})")


def merge_memory(vectors: TaskVectorSet, method: MergeMethod, recipe: Recipe, evaluate: bool) -> MergeMemory:
    tasks = len(vectors.inputs)
    sizes = {name: math.prod(vectors.shape(name)) for name in vectors.names}
    writing, largest = 0, "?"
    for name, size in sizes.items():
        shape = vectors.shape(name)
        chunks = 3 * FLOAT * tasks * min(size, CHUNK) + FLOAT * min(size, CHUNK)  # vectors, parts, masks; checkpoint
        if isinstance(method, MatrixMerge) and method.whole(name, shape, recipe):
            held = SVD_COPIES * FLOAT * tasks * size
        elif method.needs_level:
            held = LEVEL_COPIES * FLOAT * size + (FLOAT * tasks * size if tasks * size <= WHOLE else chunks)
        else:
            held = chunks
        held += FLOAT * size * (name in vectors.tied.values())  # kept to be written twice
        if held > writing:
            writing, largest = held, name
    evaluation = 0
    if evaluate:
        network = sum(math.prod(vectors.base.shape(key)) for key in vectors.base.keys) * FLOAT
        targets = sum(sizes.values()) * FLOAT
        merged = tasks if method.per_task else 1
        evaluation = network + targets * (2 * tasks + merged + 1) + writing  # vectors, parts, merge, weights
    return MergeMemory(evaluation, writing, largest)
