"""beaconsql: PostgreSQL as the single source of truth for Project Beacon's executions.

The runner records a run in ``cross_region_executions`` and ``region_results``; the portal
reads ``executions``. beaconsql mirrors the first into the second inside PostgreSQL (one SQL
definition of the mapping, applied by triggers, the backfill, the view and verify) and gives
the portal a view, ``executions_unified``, that is right even before anything is mirrored.
"""

from __future__ import annotations

__version__ = "0.1.0"
