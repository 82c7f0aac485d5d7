"""The heatmaps stage: attention of the trained models over held-out patients' slides
(``cmta heatmap``; rule file ``workflow/rules/heatmaps.smk``; docs/heatmaps.md)."""
