"""The optional dependencies: each imported where it is needed, with a message that says how to install it."""
import importlib

# module -> (what to install, the name a user knows it by)
_INSTALL = {
    "torch": ("pip install torch", "PyTorch"),
    "sklearn": ("pip install scikit-learn", "scikit-learn"),
    "matplotlib": ("pip install matplotlib", "matplotlib"),
}


def require(module, feature):
    """Import ``module`` for ``feature``, or raise ModuleNotFoundError saying what to install."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        top = module.partition(".")[0]
        if error.name != top:  # the package is there but broken: its own error says more
            raise
        command, name = _INSTALL[top]
        raise ModuleNotFoundError(f"{feature} needs {name}, which is not installed: {command}",
                                  name=top) from None
