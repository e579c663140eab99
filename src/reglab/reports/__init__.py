"""Reports: figures (plots), the compare report, the ablation report, and their shared document model."""
