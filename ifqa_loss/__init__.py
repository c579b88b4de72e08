"""ifqa-loss: IFQA face-quality assessment as a differentiable loss, a torchmetrics metric and per-pixel maps."""
from . import functional
from .core import IFQA, IFQAOutput
from .dsl import DSLFIQA, DSLFIQALoss, DSLFIQAMetric
from .loss import IFQALoss
from .metric import IFQAMetric
from .weights import REGISTRY, RegisteredWeights, WeightsError, register_weights

__version__ = "0.1.0"

__all__ = ["DSLFIQA", "DSLFIQALoss", "DSLFIQAMetric", "IFQA", "IFQALoss", "IFQAMetric", "IFQAOutput", "REGISTRY",
           "RegisteredWeights", "WeightsError", "functional", "register_weights", "__version__"]
