"""Drop-in replacements for the seed repositories' own APIs, so their README code runs on vitune.

- ``vitune.compat.repadapter``: ``set_repadapter``, ``save_repadapter``, ``load_repadapter``, ``merge_repadapter``
- ``vitune.compat.consolidator``: the ``Consolidator`` linear layer with ``get_actual_params()``
- ``vitune.compat.peft``: ``load_peft_lora``, ``save_peft_lora`` (Hugging Face PEFT's LoRA adapter folders)

AdaptFormer's ``tuning_config`` keys are accepted by ``vitune.apply(model, "adaptformer", **tuning_config)``.
See docs/migrating.md.
"""
