"""The sparse scheme in the app: its masks are drawn by the generic Masks page; its routing is
edited mask by mask."""

from app.mask_editor import mask_editor
from app.schemes.view import SchemeView

VIEW = SchemeView(editor=mask_editor)
