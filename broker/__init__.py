"""Brokers for gatemesh: a local Mosquitto process and the embedded amqtt broker."""
