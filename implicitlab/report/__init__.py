"""The HTML report: every experiment's figure and claims on one self-contained page."""

from .html import ReportEntry, render, summary_counts, write_report

__all__ = ["ReportEntry", "render", "summary_counts", "write_report"]
