"""geomem.validation: experiments, figures and the ``geomem`` command line."""

__all__: list[str] = []
