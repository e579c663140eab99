"""Reports: every report is a study (facts) analysed once (analysis) and written through a list of shared sections
(sections, report) into one document model (document): the compare, ablation and single-run reports, and figures
(plots). `reglab plan` (planning) analyses a pilot study the same way and prints the seeds a new study needs."""
