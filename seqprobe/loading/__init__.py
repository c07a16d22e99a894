"""Models by name: the torch-free registry (`known`), loading (`models`) and the weights cache."""
