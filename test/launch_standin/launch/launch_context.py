class LaunchContext:
    def __init__(self, *, argv=None, noninteractive=False) -> None:
        self.launch_configurations: dict[str, str] = {}
        self.environment: dict[str, str] = {}
