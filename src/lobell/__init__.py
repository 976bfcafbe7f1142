"""lobell: fine-tune pre-trained models the right way (Layers, Optimizer, Batch size, Epochs, Loss, LR)."""

from lobell.api import FineTuner, TextClassifier, load
from lobell.config import Config, load_config
from lobell.errors import LobellError
from lobell.train.runner import RunResult, train
from lobell.vision_api import TransferLearningModel

__all__ = ["Config", "FineTuner", "LobellError", "RunResult", "TextClassifier", "TransferLearningModel", "load", "load_config", "train"]
__version__ = "0.1.0"
