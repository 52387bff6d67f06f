"""condor-cloud: an IaaS cloud whose instances are HTCondor jobs running libvirt guests."""
