"""End to end with PyTorch's own compiler: a decomposed train export switched to eval by
exmode, compiled with AOTInductor (torch._inductor.aoti_compile_and_package), run, and
matched with the same compilation of torch's own decomposed eval export (bit for bit) and with
eager eval (to the compiler's rounding). This is the README's recipe."""

import copy

import torch

from conftest import read_program, run_ok


class ConvBnDropout(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.bn = torch.nn.BatchNorm2d(8)
        self.drop = torch.nn.Dropout(0.3)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x))).mean((2, 3))
        return self.fc(self.drop(y))


def test_switched_decomposed_export_compiles_with_aotinductor(tmp_path):
    torch.manual_seed(0)
    model = ConvBnDropout()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 16, 16)

    train_ep = torch.export.export(copy.deepcopy(model).train(), (x,)).run_decompositions()
    torch.export.save(train_ep, str(tmp_path / "train.pt2"))
    # The train program's batch-norm statistics updates are graph outputs; eval has none.
    specs = read_program(tmp_path / "train.pt2")["graph_module"]["signature"]["output_specs"]
    assert sum("buffer_mutation" in s for s in specs) == 3

    run_ok("eval", tmp_path / "train.pt2", "-o", tmp_path / "eval.pt2")
    switched = torch.export.load(str(tmp_path / "eval.pt2"))
    assert [s.kind.name for s in switched.graph_signature.output_specs] == ["USER_OUTPUT"]

    package = torch._inductor.aoti_compile_and_package(switched, package_path=str(tmp_path / "switched.pt2"))
    actual = torch._inductor.aoti_load_package(package)(x)

    reference_ep = torch.export.export(copy.deepcopy(model).eval(), (x,)).run_decompositions()
    reference = torch._inductor.aoti_load_package(
        torch._inductor.aoti_compile_and_package(reference_ep, package_path=str(tmp_path / "reference.pt2"))
    )(x)
    assert torch.equal(actual, reference)
    with torch.no_grad():
        eager = copy.deepcopy(model).eval()(x)
    torch.testing.assert_close(actual, eager, rtol=1e-5, atol=1e-5)
