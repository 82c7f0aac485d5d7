"""The report stage: survival metrics of trained runs, Kaplan-Meier figures, the Table 1
comparison across cohorts and the evaluation protocols (``cmta report``, ``cmta compare``,
``cmta table1``; rule file ``workflow/rules/report.smk``; docs/report.md).

Rooms: :mod:`.metrics` (scikit-survival metrics per fold), :mod:`.figures`,
:mod:`.comparison` (Table 1 layout of reports), :mod:`.table1` (Table 1 from runs, sd by
protocol) and :mod:`.paired` (paired bootstrap c-index differences), :mod:`.protocol`
(honest and paper protocols; read by the workflow when it plans, so this package imports
nothing heavy).
"""
