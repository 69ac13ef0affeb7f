// The build module for tctl, Temporal's older CLI (scripts/build-tctl.sh): operators still use it.
module metalflow.test/testbed/tctl

go 1.26

require github.com/temporalio/tctl v1.18.0
