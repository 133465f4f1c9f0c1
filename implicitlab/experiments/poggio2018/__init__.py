"""Poggio et al. 2018, Theory IIIb: generalization in deep networks."""

from . import fig7  # noqa: F401  (registers poggio2018-fig7)
from . import fig4  # noqa: F401  (registers poggio2018-fig4)
from . import fig6  # noqa: F401  (registers poggio2018-fig6)
from . import fig3  # noqa: F401  (registers poggio2018-fig3)
from . import init_independence  # noqa: F401  (registers poggio2018-init-independence)
from . import hessian  # noqa: F401  (registers poggio2018-hessian)
from . import fig1_cifar, fig2_cifar, fig5_cifar  # noqa: F401  (registers poggio2018-fig1, -fig2, -fig5)
