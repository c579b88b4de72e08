"""Training IFQA discriminators with the paper's adversarial recipe (degradations, generator, FPRS)."""
