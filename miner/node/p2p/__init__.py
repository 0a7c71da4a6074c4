"""The node's peer-to-peer face: Bitcoin's wire protocol to other nodes (`manager`)."""
