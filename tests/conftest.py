import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests/helpers.py and tests/cases.py
torch.set_num_threads(1)  # tiny models: threads cost more than they give, and CI has 2 cores
