"""Module surgery: find, replace and remove submodules by their dotted path."""

from __future__ import annotations

from torch import nn


def _parent(model: nn.Module, path: str) -> tuple[nn.Module, str]:
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    return parent, attr


def replace_module(model: nn.Module, path: str, new: nn.Module) -> nn.Module:
    """Put `new` where `path` is and return the module it replaced."""
    parent, attr = _parent(model, path)
    old = parent.get_submodule(attr)
    setattr(parent, attr, new)  # Sequential/ModuleList children are attributes named "0", "1", ...
    return old


def remove_module(model: nn.Module, path: str) -> None:
    parent, attr = _parent(model, path)
    del parent._modules[attr]


def owner_module(model: nn.Module, tensor_name: str) -> nn.Module:
    """The module that directly holds the parameter or buffer `tensor_name`."""
    path, _, _ = tensor_name.rpartition(".")
    return model.get_submodule(path) if path else model


class ModelSnapshot:
    """The structure of a model, taken before surgery, to put back if the surgery fails halfway.

    Records every module's children, parameters, buffers and train/eval mode, every parameter's
    ``requires_grad`` and the root's plain attributes. Tensor values are not copied: surgery replaces
    modules, it does not write into the backbone's tensors.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.modules = [
            (m, dict(m._modules), dict(m._parameters), dict(m._buffers), m.training) for m in model.modules()
        ]
        self.requires_grad = [(p, p.requires_grad) for p in model.parameters()]
        self.attributes = dict(model.__dict__)

    def restore(self) -> None:
        for module, children, params, buffers, training in self.modules:
            for store, saved in ((module._modules, children), (module._parameters, params), (module._buffers, buffers)):
                store.clear()
                store.update(saved)
            module.training = training
        for p, flag in self.requires_grad:
            p.requires_grad_(flag)
        for name in set(self.model.__dict__) - set(self.attributes):
            del self.model.__dict__[name]
        self.model.__dict__.update(self.attributes)
