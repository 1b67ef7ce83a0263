"""DP-SGD at the site, per patient or per image, with an accountant that spans every round.

Import names from their submodule (``accounting``, ``image_dp``, ``patient_dp``,
``patient_sampling``, ``per_sample_gradients``, ``ghost_clipping``, ``planning``, ``unit``):
the package itself imports nothing, so a process that never trains (a SecAgg+ key stage,
``medfed-site start``, the privacy ledger) loads no torch or Opacus.
"""
