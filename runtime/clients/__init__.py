"""Client-side code: dialing a server, the `chat` terminal client, the `bench` load generator."""
