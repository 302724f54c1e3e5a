"""Launchers: local Ray now; KubeRay RayJob submission later."""
