# The Slurm test's image (tests/cluster/run_slurm.sh): the project image plus Debian's Slurm
# (slurmctld, slurmd, the client commands) and munge, so one image serves the controller and
# the compute nodes; `rbo` is the user who submits jobs. Build context: tests/cluster.
ARG ROBUSTBENCH_IMAGE
FROM ${ROBUSTBENCH_IMAGE}
# policy-rc.d: the packages must not start their daemons while the image builds.
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       slurmctld slurmd slurm-client munge \
    && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d \
    && install -d -o slurm -g slurm /var/lib/slurm/slurmctld /var/log/slurm \
    && install -d /var/lib/slurm/slurmd \
    && useradd --create-home --uid 1500 rbo
COPY slurm.conf /etc/slurm/slurm.conf
COPY slurm-entrypoint.sh /usr/local/bin/slurm-entrypoint.sh
ENTRYPOINT ["/usr/local/bin/slurm-entrypoint.sh"]
