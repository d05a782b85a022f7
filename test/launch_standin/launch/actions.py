class Action:
    def __init__(self, *, condition=None) -> None:
        self.condition = condition


class DeclareLaunchArgument(Action):
    def __init__(self, name, *, default_value=None, description=None, choices=None, **kwargs) -> None:
        super().__init__(**kwargs)
        if choices is not None and isinstance(default_value, str) and default_value not in choices:
            raise ValueError(f"default_value '{default_value}' is not in the choices {choices}")
        self.name, self.default_value, self.description, self.choices = name, default_value, description, choices


class IncludeLaunchDescription(Action):
    def __init__(self, launch_description_source, *, launch_arguments=None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.launch_description_source = launch_description_source
        self.launch_arguments = list(launch_arguments or [])
