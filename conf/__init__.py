"""peft_glue's Hydra configs, installed as the package ``peft_glue.conf`` (``pkg://peft_glue.conf``)."""
