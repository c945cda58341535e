"""Simulators used by tests and benchmarks."""

from .ptycho import simulate_scan, letter_phase_object

__all__ = ["simulate_scan", "letter_phase_object"]
