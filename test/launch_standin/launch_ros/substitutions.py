from ament_index_python.packages import get_package_share_directory
from launch.substitutions import Substitution, perform


class FindPackageShare(Substitution):
    def __init__(self, package) -> None:
        self.package = package

    def perform(self, context) -> str:
        return get_package_share_directory(perform(self.package, context))
