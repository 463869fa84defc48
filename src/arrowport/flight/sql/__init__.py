"""Flight SQL (what the ADBC drivers speak) on Arrowport's Flight endpoint."""

from arrowport.flight.sql.envelope import is_wrapped
from arrowport.flight.sql.service import ACTIONS, UNSERVED_ACTIONS, FlightSql

__all__ = ["ACTIONS", "UNSERVED_ACTIONS", "FlightSql", "is_wrapped"]
