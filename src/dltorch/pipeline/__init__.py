"""One function per DVC stage: what a stage script calls after parsing its arguments."""
