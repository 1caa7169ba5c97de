"""Pure rendering: a service's spec -> the child manifests (Deployment, Service, PodDisruptionBudget)."""

from . import labels
from .children import Children, endpoint_url, render_children
from .image import image_for

__all__ = ["Children", "endpoint_url", "image_for", "labels", "render_children"]
