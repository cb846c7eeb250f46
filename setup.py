"""ament_python package setup: works under `colcon build` and with plain `pip install`."""
from glob import glob
import os

from setuptools import find_packages, setup

package_name = 'dmn_localizer'


def _files(pattern):
    return [f for f in glob(pattern) if os.path.isfile(f)]


setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', _files('launch/*.py')),
        ('share/' + package_name + '/config', _files('config/*')),
        ('share/' + package_name + '/models', _files('models/*')),
    ],
    include_package_data=True,
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='dmn_localizer developers',
    maintainer_email='dev@dmn-localizer.invalid',
    description='Visual localization against a learned view-embedding map '
                '(Differentiable Mapping Network) for ROS 2',
    license='Apache-2.0',
    tests_require=['pytest'],
    python_requires='>=3.10',
    entry_points={
        'console_scripts': [
            'mapper_node = dmn_localizer.nodes.mapper_node:main',
            'localizer_node = dmn_localizer.nodes.localizer_node:main',
            'dmn-localizer = dmn_localizer.cli:console_main',
        ],
    },
)
