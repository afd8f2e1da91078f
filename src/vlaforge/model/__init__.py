"""The model, one file per box of the paper's figure: vision, projector, llm, vla; weights = checkpoint I/O."""
