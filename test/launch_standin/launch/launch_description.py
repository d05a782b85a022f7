class LaunchDescription:
    def __init__(self, initial_entities=None, *, deprecated_reason=None) -> None:
        self.entities = list(initial_entities or [])

    def add_action(self, action) -> None:
        self.entities.append(action)
