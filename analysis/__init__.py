"""Run directories -> tables and plots, side by side with the paper's numbers."""
