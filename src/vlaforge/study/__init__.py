"""`vlaforge study`: the paper's comparisons reproduced in miniature on Meta-World, on a CPU.

- `arms`: the rows (how each model is trained and evaluated) and the comparisons they answer.
- `config`: the budgets (`StudyConfig`; `--quick` for the < 30 minute version).
- `run`: demonstrations -> train every arm -> evaluate it, resumable arm by arm.
- `evaluate`: one arm in the simulator, with its policy timed.
- `report`: markdown tables with Wilson intervals, plots.
"""
