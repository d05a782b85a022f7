from launch.actions import Action


class Node(Action):
    def __init__(self, *, executable, package=None, name=None, namespace=None, exec_name=None, parameters=None,
                 remappings=None, ros_arguments=None, arguments=None, **kwargs) -> None:
        # ExecuteProcess / ExecuteLocal keyword arguments the real Node passes on
        known = {"additional_env", "env", "cwd", "output", "emulate_tty", "respawn", "respawn_delay", "prefix",
                 "sigterm_timeout", "sigkill_timeout", "log_cmd", "on_exit", "condition", "name_prefix"}
        unknown = set(kwargs) - known
        if unknown:
            raise TypeError(f"Node() got unexpected keyword arguments {sorted(unknown)}")
        super().__init__(condition=kwargs.pop("condition", None))
        self.executable, self.package, self.name, self.namespace = executable, package, name, namespace
        self.parameters = list(parameters or [])
        self.remappings = list(remappings or [])
        self.ros_arguments = list(ros_arguments or [])
        self.arguments = list(arguments or [])
        self.kwargs = kwargs
