"""kscand: page-table Accessed-bit scanning that promotes hot slow-tier pages to the top tier."""

__version__ = "0.1.0"
