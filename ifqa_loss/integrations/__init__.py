"""Adapters for other training frameworks, each imported explicitly so that its framework stays optional.

- ``ifqa_loss.integrations.basicsr``: losses registered in basicsr's ``LOSS_REGISTRY`` (GFPGAN, CodeFormer and
  other option-file trainers); needs ``pip install "ifqa-loss[basicsr]"``. See docs/basicsr.md.

Importing ``ifqa_loss`` or this package imports no framework.
"""
