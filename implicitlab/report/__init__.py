"""The HTML report: every experiment's figure and claims on one self-contained page."""

from .html import ReportEntry, claims_records, render, summary_counts, thresholds_table, write_report

__all__ = ["ReportEntry", "claims_records", "render", "summary_counts", "thresholds_table", "write_report"]
