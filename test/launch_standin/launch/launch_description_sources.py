class PythonLaunchDescriptionSource:
    def __init__(self, launch_file_path) -> None:
        self.launch_file_path = launch_file_path
