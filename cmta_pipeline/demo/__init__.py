"""The demo: a synthetic cohort with risk planted in slides and genomics, its encoder and
its summary (``cmta demo-cohort``, ``demo-encoder``, ``demo-summary``; rule file
``workflow/rules/demo.smk``; docs/demo.md)."""
