"""The Deltacloud API (v1.1, the condor driver's subset) over HTCondor."""
