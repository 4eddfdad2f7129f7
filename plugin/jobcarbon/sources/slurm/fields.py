"""What jobcarbon asks sacct for, shared by the runner, the parser and the pyslurm backend."""

from __future__ import annotations

#: Columns to ask sacct for (``--format``); the reader needs those marked required.
SACCT_FIELDS = (
    "JobIDRaw",
    "JobID",
    "Cluster",
    "User",
    "Account",
    "WCKey",
    "Partition",
    "State",
    "Submit",
    "Start",
    "End",
    "ElapsedRaw",
    "AllocTRES",
    "NNodes",
    "NodeList",
    "JobName",
    "ConsumedEnergyRaw",
    "TRESUsageInTot",
)
REQUIRED_FIELDS = (
    "JobIDRaw",
    "JobID",
    "User",
    "Account",
    "Partition",
    "State",
    "Submit",
    "Start",
    "End",
    "AllocTRES",
)

#: What jobcarbon asks sacct to separate fields with: a job name may hold a "|".
DELIMITER = "^|^"
#: States sacct is asked for when sweeping by end time (jobs that have ended).
FINAL_STATES = "CA,CD,DL,F,NF,OOM,PR,RQ,TO,BF"
