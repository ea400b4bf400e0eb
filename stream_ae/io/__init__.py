"""Input/output: the local Kafka broker and Kafka clients."""
