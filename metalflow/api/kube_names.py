"""Kubernetes API names metalflow reads and writes: metal3's BareMetalHost and metalflow's own
HostClaim and HostSet. One place, so the bridge, the status activity and the CRDs agree."""

from __future__ import annotations

METAL3_GROUP = "metal3.io"
METAL3_VERSION = "v1alpha1"
METAL3_API_VERSION = f"{METAL3_GROUP}/{METAL3_VERSION}"
BMH_KIND = "BareMetalHost"
BMH_PLURAL = "baremetalhosts"
HFS_KIND, HFS_PLURAL = "HostFirmwareSettings", "hostfirmwaresettings"
FIRMWARE_SCHEMA_KIND, FIRMWARE_SCHEMA_PLURAL = "FirmwareSchema", "firmwareschemas"
HUP_KIND, HUP_PLURAL = "HostUpdatePolicy", "hostupdatepolicies"
HFC_KIND, HFC_PLURAL = "HostFirmwareComponents", "hostfirmwarecomponents"

METALFLOW_GROUP = "metalflow.io"
METALFLOW_VERSION = "v1alpha1"
METALFLOW_API_VERSION = f"{METALFLOW_GROUP}/{METALFLOW_VERSION}"
HOSTCLAIM_KIND, HOSTCLAIM_PLURAL = "HostClaim", "hostclaims"
HOSTSET_KIND, HOSTSET_PLURAL = "HostSet", "hostsets"
CAMPAIGN_KIND, CAMPAIGN_PLURAL = "Campaign", "campaigns"
