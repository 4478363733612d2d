"""Evaluation: retrieval metrics, baselines and the honest test-split evaluation of a run.

* `retrieval` -- `retrieval_metrics(similarity)` (top-1/5/10, mean/median rank, both directions,
  chance levels), `n_way_metrics` (the 300-way protocol), `correlation_matrix`.
* `baselines` -- `ridge_baseline` (pixels -> responses), `repeat_baseline` (Stringer et al. 2019
  repeat-to-repeat decoder), `oracle_baseline` (noiseless rates of simulated subjects).
* `evaluate` -- `score_trainer(trainer)`: results (what results.json holds) and test outputs from
  the best weights on the untouched test split; `importance`, `reliability`, `feve` -- per-neuron measures.

Functions on arrays and trainers only: nothing here reads or writes a run folder or imports
`training` (writing a run's artifacts and re-evaluating it from its folder: `neuroalign.training.run_eval`).
"""

from neuroalign.evaluation.baselines import oracle_baseline, repeat_baseline, ridge_baseline
from neuroalign.evaluation.retrieval import correlation_matrix, n_way_metrics, retrieval_metrics

__all__ = ["correlation_matrix", "n_way_metrics", "oracle_baseline", "repeat_baseline", "retrieval_metrics",
           "ridge_baseline"]
