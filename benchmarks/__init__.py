"""Speed benchmarks of peft_glue; run each as `python -m benchmarks.<name>` from the repository root."""
