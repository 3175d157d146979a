"""The ``horodate`` console command: fronts the appliance, the vault and the operator tools."""

__version__ = "0.1.0"
