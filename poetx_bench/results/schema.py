"""Constants of the row format, defined once."""

# 2: non-finite numbers are written as null with a `nonfinite` record beside them (1 wrote bare NaN).
SCHEMA_VERSION = 2
OK = "ok"
FINAL_STATUSES = (OK, "oom", "error", "timeout", "diverged", "skipped")
NONFINITE_KEY = "nonfinite"
