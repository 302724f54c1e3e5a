"""Where training jobs run (local Ray in the step's process, or a KubeRay RayJob) and the storage they share."""
