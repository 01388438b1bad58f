"""Pure analysis of runs and models: overlap, comparison. No Streamlit, no training."""
