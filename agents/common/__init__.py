"""What every shopstream process shares: settings, logging, Postgres, the bus helpers."""
