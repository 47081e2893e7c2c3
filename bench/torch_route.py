"""What a user who only has the .pt2 file does today to get it in eval mode, without exmode.

    python3 bench/torch_route.py IN.pt2 OUT.pt2

torch.export.load -> ep.module() -> torchao's move_exported_model_to_eval ->
torch.export.export(module, *ep.example_inputs) -> torch.export.save. Run as a
subprocess by bench.py, so its time includes starting Python and importing torch.
"""

import argparse
import logging

import torch

# torchao logs a warning for each optional CUDA kernel library it cannot load on this machine.
logging.getLogger("torchao").setLevel(logging.ERROR)
from torchao.quantization.pt2e import move_exported_model_to_eval  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input")
    parser.add_argument("output")
    args = parser.parse_args()
    ep = torch.export.load(args.input)
    module = move_exported_model_to_eval(ep.module())
    example_args, example_kwargs = ep.example_inputs
    torch.export.save(torch.export.export(module, example_args, example_kwargs), args.output)


if __name__ == "__main__":
    main()
