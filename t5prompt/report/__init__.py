"""`t5prompt report`: run directories -> tables and plots beside the published numbers."""

from t5prompt.report.tables import write_report

__all__ = ['write_report']
